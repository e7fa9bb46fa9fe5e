# bench/h1-floor.ts (addon-c, addon-js) and bench/conn-floor.ts (native-c, native-js) build this on
# demand; not part of the product's build.
# node-addon-api's except.gypi settings are inlined rather than depending on its gyp target:
# that target's stamp file lands on a path relative to node_modules' real location, which with a
# symlinked node_modules is outside build/ (inside the tree).
{
  "targets": [
    {
      "target_name": "poll_forwarder",
      "sources": ["poll-forwarder.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wno-missing-field-initializers"]
    },
    {
      "target_name": "conn_forwarder",
      "sources": ["conn-forwarder.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wno-missing-field-initializers"]
    }
  ]
}
