#!/usr/bin/env bash
# Builds the GPU report bundle: a self-contained linux-x64 `vkpeft-bench` (one compressed executable with the .NET
# runtime and the SPIR-V kernels inside; no .NET SDK or runtime needed where it runs), the Vulkan loader .deb
# (libvulkan1 and the GL dispatch libraries, for machines that have a GPU driver but no loader), stories260K, and run.sh, which unpacks the loader
# when it is missing, points Vulkan at the NVIDIA driver file when no other is registered and runs
# `vkpeft-bench gpu-report`, writing gpu-report.json, gpu-report.md, gpu-report.log and nvidia-smi.txt to $OUT (or the
# folder given as its first argument).
#
#   bench/gpu-bundle.sh [DIR]          # default DIR: .gpu-bundle in the repository root (ignored by git; ~45 MiB)
#   DIR/run.sh [OUTDIR] [--quick]      # on the GPU machine
#
# From a checkout with the bundle built at its root, the device tool takes it in one call:
#   run(command="bash .gpu-bundle/run.sh", carry=[".gpu-bundle"], timeout_s=540)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$ROOT/.gpu-bundle}"
TMP="$DEST.tmp.$$"
say() { printf 'gpu-bundle: %s\n' "$*" >&2; }
trap 'rm -rf "$TMP"' EXIT

rm -rf "$TMP"
mkdir -p "$TMP/debs" "$TMP/models" "$TMP/apt/lists/partial" "$TMP/apt/cache/archives/partial"

say "publishing a self-contained linux-x64 vkpeft-bench..."
dotnet publish "$ROOT/bench/VkPeft.Bench.csproj" -c Release -r linux-x64 --self-contained -nologo -v quiet -clp:ErrorsOnly \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true \
  -p:DebugType=none -p:GenerateDocumentationFile=false -o "$TMP/app"

# The Vulkan loader for amd64 from this machine's Debian archive, through a private package list (the system's apt
# state is not touched).
# The NVIDIA driver's Vulkan library (libGLX_nvidia) also needs the GL vendor-neutral dispatch libraries, so those come too.
say "downloading the Vulkan loader and GL dispatch libraries (amd64)..."
apt_opts=(-o APT::Architecture=amd64 -o APT::Architectures=amd64 -o "Dir::State::Lists=$TMP/apt/lists"
  -o "Dir::Cache=$TMP/apt/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)" -qq)
apt-get "${apt_opts[@]}" update >&2
(cd "$TMP/debs" && apt-get "${apt_opts[@]}" download libvulkan1 libglvnd0 libglx0 libegl1 libopengl0 libgl1 libgles2 >&2)
rm -rf "$TMP/apt"

# stories260K for the training benchmark (random weights of its shape when the shared copy is absent).
for f in stories260K.bin tok512.bin; do
  for d in "${VKPEFT_SHARED:-$ROOT/../shared}/models/stories260K" "${XDG_CACHE_HOME:-$HOME/.cache}/vkpeft/stories260K"; do
    if [ -f "$d/$f" ]; then cp "$d/$f" "$TMP/models/"; break; fi
  done
done

cat >"$TMP/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs vkpeft's GPU report from this bundle: `run.sh [OUTDIR] [gpu-report options]` (OUTDIR defaults to $OUT, else
# ./report). Needs a Vulkan driver; unpacks the bundled loader when the system has none.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUTDIR="${OUT:-$HERE/report}"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then OUTDIR="$1"; shift; fi
mkdir -p "$OUTDIR"
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if [ "$(id -u)" -eq 0 ]; then
    for f in "$HERE"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    mkdir -p /tmp/vkpeft-loader
    for f in "$HERE"/debs/*.deb; do dpkg -x "$f" /tmp/vkpeft-loader; done
    export LD_LIBRARY_PATH="/tmp/vkpeft-loader/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
fi
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] \
   && ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null && ! compgen -G '/etc/vulkan/icd.d/*.json' >/dev/null \
   && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export DOTNET_BUNDLE_EXTRACT_BASE_DIR="${TMPDIR:-/tmp}/vkpeft-bundle"
(nvidia-smi || true) >"$OUTDIR/nvidia-smi.txt" 2>&1
stories=()
[ -f "$HERE/models/stories260K.bin" ] && stories=(--stories "$HERE/models/stories260K.bin")
"$HERE/app/vkpeft-bench" gpu-report --out "$OUTDIR" "${stories[@]}" "$@" 2>&1 | tee "$OUTDIR/gpu-report.log"
exit "${PIPESTATUS[0]}"
EOF
chmod +x "$TMP/run.sh"

rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
say "bundle in $DEST ($(du -sh "$DEST" | cut -f1)); run it with: bash $DEST/run.sh [OUTDIR] [--quick]"
