# Empty compiler generated dependencies file for celtrace.
# This may be replaced when dependencies are built.
