#!/usr/bin/env bash
# A private OpenSSH server for the sftp connector's tests: loopback only, its own config, host key,
# pid file and an authorized test key, separate from any system sshd. Safe to run again: it only
# creates what is missing and starts sshd only when it is not running.
#
# State (read by the tests, see connectors/src/sftp.rs):
#   $SNODO_TEST_SSHD_DIR (default /var/tmp/snodo-sshd)/
#     sshd_config, host_ed25519_key(.pub), sshd.pid, sshd.log
#     client_ed25519(.pub)  the test client's key pair (no passphrase)
#     port                  the port sshd listens on (127.0.0.1)
#     user, home            the test user and its home; tests make their own folders under it
#     host_fingerprint      the host key's SHA256 fingerprint, as `ssh-keygen -lf` prints it
# The test user is chrooted (as an entity's account on a real server would be) into
# $SNODO_TEST_SSHD_CHROOT (default /srv/snodo-sftp/tests, root-owned as sshd requires); it writes
# under /data there, and every test works in its own folder below it.
set -euo pipefail

STATE="${SNODO_TEST_SSHD_DIR:-/var/tmp/snodo-sshd}"
PORT="${SNODO_TEST_SSHD_PORT:-2222}"
USER_NAME="${SNODO_TEST_SSHD_USER:-snodo-sftp}"
CHROOT="${SNODO_TEST_SSHD_CHROOT:-/srv/snodo-sftp/tests}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ! -x /usr/sbin/sshd ]; then
  echo "ops/sshd.sh: installing openssh-server"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server >/dev/null
fi

$SUDO mkdir -p "$STATE" /run/sshd
$SUDO chmod 755 "$STATE"

if ! id "$USER_NAME" >/dev/null 2>&1; then
  $SUDO useradd --create-home --shell /bin/sh "$USER_NAME"
fi
# sshd wants every component of the chroot path root-owned and writable by root only.
$SUDO mkdir -p "$CHROOT/data"
$SUDO chown root:root "$CHROOT" "$(dirname "$CHROOT")"
$SUDO chmod 755 "$CHROOT" "$(dirname "$CHROOT")"
$SUDO chown "$USER_NAME:" "$CHROOT/data"
# The folder the tests see, inside the chroot.
HOME_DIR=/data
# useradd leaves the account locked ("!"), which some PAM-less sshd builds treat as unusable
# even for key logins; "*" means no password but not locked.
if $SUDO grep -q "^$USER_NAME:!" /etc/shadow 2>/dev/null; then
  $SUDO usermod -p '*' "$USER_NAME"
fi

[ -f "$STATE/host_ed25519_key" ] || $SUDO ssh-keygen -q -t ed25519 -N '' -C snodo-test-host -f "$STATE/host_ed25519_key"
[ -f "$STATE/client_ed25519" ] || $SUDO ssh-keygen -q -t ed25519 -N '' -C snodo-test-client -f "$STATE/client_ed25519"
# The tests (and the sftp CLI, which wants a private key readable by its owner only) run as the
# user who called this script, root or not.
$SUDO chown "${SUDO_USER:-$(id -un)}" "$STATE/client_ed25519" "$STATE/client_ed25519.pub"
$SUDO chmod 600 "$STATE/client_ed25519"

$SUDO mkdir -p "$STATE/authorized_keys"
$SUDO cp "$STATE/client_ed25519.pub" "$STATE/authorized_keys/$USER_NAME"
$SUDO chmod 755 "$STATE/authorized_keys"
$SUDO chmod 644 "$STATE/authorized_keys/$USER_NAME"

$SUDO tee "$STATE/sshd_config" >/dev/null <<EOF
# Written by ops/sshd.sh: the test sshd of snodo's sftp connector.
ListenAddress 127.0.0.1
Port $PORT
HostKey $STATE/host_ed25519_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys/%u
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $USER_NAME
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
LogLevel INFO
Match User $USER_NAME
  ChrootDirectory $CHROOT
  ForceCommand internal-sftp
EOF

$SUDO /usr/sbin/sshd -t -f "$STATE/sshd_config"

running=""
if [ -f "$STATE/sshd.pid" ]; then
  pid="$(cat "$STATE/sshd.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q sshd "/proc/$pid/comm" 2>/dev/null; then
    running="$pid"
  fi
fi
if [ -n "$running" ]; then
  # Pick up a changed config without dropping anyone.
  $SUDO kill -HUP "$running"
else
  $SUDO /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/sshd.log"
  for _ in $(seq 1 50); do
    [ -s "$STATE/sshd.pid" ] && break
    sleep 0.1
  done
fi

echo "$PORT" | $SUDO tee "$STATE/port" >/dev/null
echo "$USER_NAME" | $SUDO tee "$STATE/user" >/dev/null
echo "$HOME_DIR" | $SUDO tee "$STATE/home" >/dev/null
ssh-keygen -lf "$STATE/host_ed25519_key.pub" | awk '{print $2}' | $SUDO tee "$STATE/host_fingerprint" >/dev/null

echo "ops/sshd.sh: sshd (pid $(cat "$STATE/sshd.pid")) on 127.0.0.1:$PORT, user $USER_NAME chrooted in $CHROOT (writes under $HOME_DIR)"
echo "ops/sshd.sh: client key $STATE/client_ed25519, host key $(cat "$STATE/host_fingerprint")"
