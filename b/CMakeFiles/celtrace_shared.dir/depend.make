# Empty dependencies file for celtrace_shared.
# This may be replaced when dependencies are built.
