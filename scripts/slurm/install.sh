#!/usr/bin/env bash
# Install the Debian packages needed by scripts/slurm/cluster.sh (Slurm 22.05 + MUNGE).
# Idempotent: does nothing when slurmctld, slurmd, sbatch and munged are already on PATH.
# Must run as root (or via sudo) on Debian 12 / bookworm.
set -euo pipefail

need=(slurmctld slurmd sbatch munged)
missing=()
for b in "${need[@]}"; do
    # daemons live in /usr/sbin, which may not be on a non-root PATH
    if ! command -v "$b" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$b ]]; then
        missing+=("$b")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install.sh: slurm and munge already installed ($(dpkg-query -W -f '${Version}' slurmctld 2>/dev/null || echo "version unknown"))"
    exit 0
fi
echo "install.sh: missing: ${missing[*]}; installing packages"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install.sh: error: need root (or sudo)" >&2; exit 1; }
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(slurmctld slurmd slurm-client munge)

# apt-get update only if the package lists are empty or the install fails for want of them
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    "${SUDO[@]}" apt-get update
fi
if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"; then
    echo "install.sh: install failed, refreshing package lists and retrying" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"
fi

# Debian's postinst may try to start services; without systemd that fails harmlessly,
# but make sure no packaged daemon was left running (cluster.sh starts its own).
for b in slurmctld slurmd munged; do
    if pids=$(pgrep -x "$b" 2>/dev/null); then
        echo "install.sh: note: a system $b is running (pids: $pids); cluster.sh does not use it" >&2
    fi
done
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || { echo "install.sh: error: $b still missing after install" >&2; exit 1; }
done
echo "install.sh: done (slurm $(dpkg-query -W -f '${Version}' slurmctld))"
