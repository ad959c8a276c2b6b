# Empty compiler generated dependencies file for test_media.
# This may be replaced when dependencies are built.
