# Empty dependencies file for ct_speed.
# This may be replaced when dependencies are built.
