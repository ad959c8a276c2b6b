# Empty compiler generated dependencies file for celtrace_static.
# This may be replaced when dependencies are built.
