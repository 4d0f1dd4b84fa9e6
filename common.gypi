# Build settings shared by both addons (binding.gyp includes this file).
#
#   npx node-gyp rebuild                              Release: -O2
#   npx node-gyp rebuild --debug                      Debug: -O0 -g (build/Debug, which `bindings` prefers)
#   npx node-gyp rebuild -- -Dsanitize=address        a sanitizer build (any -fsanitize= list:
#   npx node-gyp rebuild -- -Dsanitize=undefined      address / undefined,float-cast-overflow / ...)
#                                                     -O1 -g -fno-omit-frame-pointer
# (GYP_DEFINES="sanitize=address" in the environment does the same as -Dsanitize=address.)
{
  'variables': {
    'sanitize%': '',
  },
  'target_defaults': {
    'include_dirs': [
      '<!(node -p "require(\'node-addon-api\').include_dir")',
      'native',
    ],
    # N-API version pinned: the addon uses nothing newer (napi_object_freeze, instance data: 8).
    'defines': ['NAPI_VERSION=8', 'NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS', '_GNU_SOURCE'],
    'cflags': ['-Wall', '-Wextra', '-fvisibility=hidden'],
    'cflags_cc': ['-std=c++17', '-fno-exceptions', '-fvisibility-inlines-hidden'],
    'ldflags': ['-pthread'],
    'configurations': {
      'Release': {
        'cflags': ['-O2'],
      },
      'Debug': {
        'cflags': ['-O0', '-g'],
      },
    },
    'conditions': [
      ['sanitize!=""', {
        'cflags': ['-fsanitize=<(sanitize)', '-fno-omit-frame-pointer', '-g', '-O1'],
        'ldflags': ['-fsanitize=<(sanitize)'],
      }],
    ],
  },
}
