# handler.sh: the function, sourced by bootstrap (_HANDLER=handler.handler).
# $1 is the file holding the event JSON; the response goes to stdout.
handler() {
	event=$(cat "$1")
	printf '{"echo": %s, "shell": "busybox"}\n' "${event:-null}"
}
