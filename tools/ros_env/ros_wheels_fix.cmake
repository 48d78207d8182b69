# Our own fix for the PyPI ROS 2 wheels: their exported rosidl_generator_py targets carry the
# wheel builder's Python include dir (/opt/python/cpXY-cpXY/...), which does not exist here and
# makes CMake refuse to generate. At the end of the top-level CMakeLists we rewrite those entries
# to this interpreter's include dir + NumPy's. On an apt ROS 2 nothing matches and nothing changes.
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _npsr_fix_wheel_python_includes)

function(_npsr_fix_wheel_python_includes)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  set(_py "${Python3_EXECUTABLE}")
  if(NOT _py)
    set(_py "$ENV{VIRTUAL_ENV}/bin/python")
  endif()
  set(_fixed_dirs "")
  foreach(_t IN LISTS _targets)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs OR NOT _dirs MATCHES "/opt/python/cp")
      continue()
    endif()
    if(NOT _fixed_dirs)
      execute_process(
        COMMAND "${_py}" -c "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include())"
        OUTPUT_VARIABLE _fixed_dirs OUTPUT_STRIP_TRAILING_WHITESPACE)
    endif()
    set(_new "")
    foreach(_d IN LISTS _dirs)
      if(NOT _d MATCHES "^/opt/python/cp")
        list(APPEND _new "${_d}")
      endif()
    endforeach()
    list(APPEND _new ${_fixed_dirs})
    list(REMOVE_DUPLICATES _new)
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
  endforeach()
endfunction()
