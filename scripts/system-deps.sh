#!/usr/bin/env bash
# Debian packages the tests use: a JDK + JUnit 5 + Gson (Android core tests), an sshd (ssh bench target
# on loopback), Chromium + npm (the browser client, tested in headless Chromium with
# onnxruntime-web from the npm registry). Installs only what is missing.
set -euo pipefail
need=()
command -v javac >/dev/null || need+=(default-jdk-headless)
[[ -f /usr/share/java/junit-platform-console-standalone.jar ]] || need+=(junit5)
[[ -f /usr/share/java/gson.jar ]] || need+=(libgoogle-gson-java)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
if (( ${#need[@]} )); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
