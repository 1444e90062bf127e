// Package shell is a Lambda custom runtime written in POSIX sh for busybox:
// bootstrap (the runtime loop), handler.sh (the function) and stage.sh
// (copies both and a static busybox into a folder for `amber build`). The Go
// code here is only its test, which runs bootstrap against an in-process
// Runtime API.
package shell
