# Empty dependencies file for ct_nullmodel.
# This may be replaced when dependencies are built.
