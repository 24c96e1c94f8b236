// Command cml-loader is not implemented yet; a later issue adds it.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "cml-loader: not yet implemented")
	os.Exit(2)
}
