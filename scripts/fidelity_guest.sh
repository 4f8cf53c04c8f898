#!/bin/sh
# The fidelity suite's reader and writer rows inside the QEMU guest (tests/vm), which has
# no disk: a RAM disk (brd) with ext4 on it stands in for one. Its page cache is ordinary,
# reclaimable page cache charged to the reader's memcg; a miss reads from the RAM disk
# (a memory copy, so the IO waits are far shorter than on the host's virtio disk, and
# the calibration measures them as they are). A second RAM disk is the swap device of
# the leak-with-swap row (a swap-out is a copy into it). The kernel's modules come from the
# harness's kernel cache (tests/vm/kernels.py), which the guest sees read-only.
#
#   sudo python3 tests/vm/harness.py --kernel 7.3 --memory 3G --timeout 2300 \
#       run -- sh scripts/fidelity_guest.sh [fidelity.py options]
set -e
.venv/bin/python - <<'PY'
import lzma, os, re, subprocess
r = os.uname().release
base = f"/root/.cache/oomkit-vm/kernels/{r}/root/usr/lib/modules/{r}/kernel"
paths = {}
for d, _, fs in os.walk(base):
    for f in fs:
        paths[f.split(".ko")[0].replace("-", "_")] = os.path.join(d, f)
done = {line.split()[0] for line in open("/proc/modules")}
def load(name):
    name = name.replace("-", "_")
    if name in done or name not in paths:
        return
    path = paths[name]
    data = lzma.open(path).read() if path.endswith(".xz") else open(path, "rb").read()
    for dep in re.findall(rb"depends=([\w,\-]*)", data)[0].decode().split(","):
        if dep:
            load(dep)
    with open(f"/tmp/{name}.ko", "wb") as f:
        f.write(data)
    args = ["rd_nr=2", "rd_size=1500000"] if name == "brd" else []
    subprocess.run(["busybox", "insmod", f"/tmp/{name}.ko", *args], check=True)
    done.add(name)
# ext4 asks the crypto API for crc32c at mount time (no module dependency says so):
# 6.12 ships it as crc32c_generic, 7.3 builds it in.
for m in ("brd", "crc32c_generic", "ext4"):
    load(m)
PY
mkfs.ext4 -q /dev/ram0
mkdir -p /mnt/oomkit-disk
mount /dev/ram0 /mnt/oomkit-disk
if command -v mkswap >/dev/null; then mkswap -q /dev/ram1; else busybox mkswap /dev/ram1; fi
if command -v swapon >/dev/null; then swapon /dev/ram1; else busybox swapon /dev/ram1; fi
exec .venv/bin/python scripts/fidelity.py --calibrate --dir /mnt/oomkit-disk \
    --rows reader-far,reader-near,writer,leak-swap,high "$@"
