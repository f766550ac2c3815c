#!/usr/bin/env bash
# Install the system packages napari needs to run headless on Debian/Ubuntu:
# Xvfb (a virtual screen for widget tests and the demo) plus the OpenGL (Mesa)
# and X/xcb libraries Qt 6 loads. Does nothing when they are already there;
# warns (and exits 0) where it cannot install them (no apt-get, not root, no sudo).
set -u
need=()
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb xauth)
packages=(libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libgl1-mesa-dri)
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
fi
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: cannot install ${need[*]} (no apt-get); widget tests need Xvfb and OpenGL." >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "warning: not root and no password-less sudo; please install: ${need[*]}" >&2
    exit 0
  fi
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null 2>&1
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null || {
    echo "warning: apt-get could not install ${need[*]}" >&2
    exit 0
  }
}
