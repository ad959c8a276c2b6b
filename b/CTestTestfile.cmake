# CMake generated Testfile for 
# Source directory: /work/main
# Build directory: /work/main/b
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
subdirs("core")
subdirs("store")
subdirs("keys")
subdirs("media")
subdirs("watermark")
subdirs("verify")
subdirs("ledger")
subdirs("api")
subdirs("tests")
subdirs("bench")
