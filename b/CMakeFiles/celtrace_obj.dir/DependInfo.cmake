
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/api/api.c" "CMakeFiles/celtrace_obj.dir/api/api.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/api/api.c.o.d"
  "/work/main/api/informed.c" "CMakeFiles/celtrace_obj.dir/api/informed.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/api/informed.c.o.d"
  "/work/main/api/video.c" "CMakeFiles/celtrace_obj.dir/api/video.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/api/video.c.o.d"
  "/work/main/core/core.c" "CMakeFiles/celtrace_obj.dir/core/core.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/core/core.c.o.d"
  "/work/main/keys/keystore.c" "CMakeFiles/celtrace_obj.dir/keys/keystore.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/keys/keystore.c.o.d"
  "/work/main/keys/vendors.c" "CMakeFiles/celtrace_obj.dir/keys/vendors.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/keys/vendors.c.o.d"
  "/work/main/ledger/issue.c" "CMakeFiles/celtrace_obj.dir/ledger/issue.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/ledger/issue.c.o.d"
  "/work/main/ledger/ledger.c" "CMakeFiles/celtrace_obj.dir/ledger/ledger.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/ledger/ledger.c.o.d"
  "/work/main/ledger/record.c" "CMakeFiles/celtrace_obj.dir/ledger/record.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/ledger/record.c.o.d"
  "/work/main/media/med_av.c" "CMakeFiles/celtrace_obj.dir/media/med_av.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/media/med_av.c.o.d"
  "/work/main/media/med_jpeg.c" "CMakeFiles/celtrace_obj.dir/media/med_jpeg.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/media/med_jpeg.c.o.d"
  "/work/main/media/med_png.c" "CMakeFiles/celtrace_obj.dir/media/med_png.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/media/med_png.c.o.d"
  "/work/main/media/med_video.c" "CMakeFiles/celtrace_obj.dir/media/med_video.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/media/med_video.c.o.d"
  "/work/main/media/media.c" "CMakeFiles/celtrace_obj.dir/media/media.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/media/media.c.o.d"
  "/work/main/store/records.c" "CMakeFiles/celtrace_obj.dir/store/records.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/store/records.c.o.d"
  "/work/main/store/store.c" "CMakeFiles/celtrace_obj.dir/store/store.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/store/store.c.o.d"
  "/work/main/verify/detect.c" "CMakeFiles/celtrace_obj.dir/verify/detect.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/verify/detect.c.o.d"
  "/work/main/verify/recipients.c" "CMakeFiles/celtrace_obj.dir/verify/recipients.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/verify/recipients.c.o.d"
  "/work/main/verify/register.c" "CMakeFiles/celtrace_obj.dir/verify/register.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/verify/register.c.o.d"
  "/work/main/verify/spectrum.c" "CMakeFiles/celtrace_obj.dir/verify/spectrum.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/verify/spectrum.c.o.d"
  "/work/main/verify/whiten.c" "CMakeFiles/celtrace_obj.dir/verify/whiten.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/verify/whiten.c.o.d"
  "/work/main/watermark/code.c" "CMakeFiles/celtrace_obj.dir/watermark/code.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/watermark/code.c.o.d"
  "/work/main/watermark/embed.c" "CMakeFiles/celtrace_obj.dir/watermark/embed.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/watermark/embed.c.o.d"
  "/work/main/watermark/keyed.c" "CMakeFiles/celtrace_obj.dir/watermark/keyed.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/watermark/keyed.c.o.d"
  "/work/main/watermark/mask.c" "CMakeFiles/celtrace_obj.dir/watermark/mask.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/watermark/mask.c.o.d"
  "/work/main/watermark/tile.c" "CMakeFiles/celtrace_obj.dir/watermark/tile.c.o" "gcc" "CMakeFiles/celtrace_obj.dir/watermark/tile.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
