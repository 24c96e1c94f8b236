//go:build !race

package emdl

const raceEnabled = false
