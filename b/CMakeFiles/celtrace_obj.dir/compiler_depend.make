# Empty compiler generated dependencies file for celtrace_obj.
# This may be replaced when dependencies are built.
