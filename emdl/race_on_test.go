//go:build race

package emdl

const raceEnabled = true
