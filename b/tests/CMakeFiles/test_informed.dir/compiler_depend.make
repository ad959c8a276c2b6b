# Empty compiler generated dependencies file for test_informed.
# This may be replaced when dependencies are built.
