{
  "targets": [
    {
      "target_name": "mesh_bpf",
      "sources": ["native/addon/datapath.cc", "native/addon/socket-io.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"],
      "defines": ["NAPI_VERSION=9"]
    }
  ]
}
