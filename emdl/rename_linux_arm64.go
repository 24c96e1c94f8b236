package emdl

const sysRenameat2 = 276
