// Command kbsctl is the admin CLI of the Confidential Model Loader.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "kbsctl: not yet implemented")
	os.Exit(2)
}
