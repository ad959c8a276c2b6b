# Empty compiler generated dependencies file for test_media_regress.
# This may be replaced when dependencies are built.
