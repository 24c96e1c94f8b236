package emdl

const sysRenameat2 = 316
