file(REMOVE_RECURSE
  "libceltrace.a"
)
