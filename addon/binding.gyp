{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["src/addon.cc", "src/notify.cc", "src/pump.cc", "src/pump_napi.cc", "src/nlsock.cc", "src/timer.cc", "src/memory.cc", "src/fastjoin.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
