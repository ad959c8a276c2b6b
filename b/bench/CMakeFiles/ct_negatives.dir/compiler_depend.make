# Empty compiler generated dependencies file for ct_negatives.
# This may be replaced when dependencies are built.
