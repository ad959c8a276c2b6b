# Empty compiler generated dependencies file for test_watermark.
# This may be replaced when dependencies are built.
