# Build settings shared by both addons. node-gyp includes ./common.gypi by itself (before Node's
# own common.gypi), so binding.gyp does not.
#
#   npx node-gyp rebuild                                 Release: -O2
#   npx node-gyp rebuild --debug                         Debug: -O0 -g (build/Debug, which `bindings`
#                                                        prefers over build/Release)
#   npx node-gyp configure -- -Dsanitize=address && npx node-gyp build
#                                                        Release with -fsanitize=address (any list:
#                                                        undefined,float-cast-overflow, ...), -O1 -g
#   npx node-gyp configure -- -Dsymbols=1 && npx node-gyp build
#                                                        Release with -O1 -g (valgrind)
# GYP_DEFINES="sanitize=address" in the environment does the same as -Dsanitize=address. A plain
# `npx node-gyp configure` (or npm install) goes back to the ordinary build.
{
  'variables': {
    'sanitize%': '',
    'symbols%': 0,  # 1: -O1 -g -fno-omit-frame-pointer in Release (valgrind)
  },
  'target_defaults': {
    'include_dirs': [
      '<!(node -p "require(\'node-addon-api\').include_dir")',
      'native',
      'include',  # include/hugetlb_ras.h, the C API a VMM includes too
    ],
    # N-API version pinned: the addon uses nothing newer (napi_object_freeze, instance data: 8).
    'defines': ['NAPI_VERSION=8', 'NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS', '_GNU_SOURCE'],
    'cflags': ['-Wall', '-Wextra', '-fvisibility=hidden'],
    'cflags_cc': ['-fno-exceptions', '-fvisibility-inlines-hidden'],
    'ldflags': ['-pthread'],
    'conditions': [
      ['sanitize!=""', {
        'cflags': ['-fsanitize=<(sanitize)', '-fno-omit-frame-pointer'],
        'ldflags': ['-fsanitize=<(sanitize)'],
      }],
    ],
    # The language standard and the optimisation level go in the configurations' cflags_cc: on the
    # compiler's command line they come after all cflags and Node's own cflags_cc (its Release -O3,
    # its -std=gnu++17), so they are the ones that count (every source is C++).
    'configurations': {
      'Release': {
        'cflags_cc': ['-std=c++17', '-O2'],
        'conditions': [
          ['sanitize!="" or symbols==1', {
            'cflags_cc': ['-O1', '-g', '-fno-omit-frame-pointer'],
          }],
        ],
      },
      'Debug': {
        'cflags_cc': ['-std=c++17', '-O0', '-g'],
      },
    },
  },
}
