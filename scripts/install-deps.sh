#!/bin/sh
# install-deps.sh - install the Debian 12 packages tlsrelay needs, only when missing.
#
# usage: scripts/install-deps.sh build|test
#   build  libraries and tools to build and run the relay (make, make run)
#   test   build + the real peers and tools the test suite talks to (make test)
#
# Services in these packages (nsd, nginx, haproxy, postfix) must never start as
# system instances: tests run private instances on loopback. A policy-rc.d that
# refuses service starts is put in place for the install if none exists, and
# postfix is preseeded to "No configuration".
set -eu

BUILD_PKGS="make gcc pkg-config openssl ca-certificates libevent-dev libssl-dev
libunbound-dev libinih-dev libldns-dev dns-root-data libjansson-dev zlib1g-dev"
TEST_PKGS="clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest
python3-aiosmtpd python3-dnspython python3-jsonschema swaks libio-socket-ssl-perl
libnet-ssleay-perl postfix nsd ldnsutils bind9-dnsutils nginx-light haproxy faketime
testssl.sh"

want=$BUILD_PKGS
[ "${1:-build}" = test ] && want="$BUILD_PKGS $TEST_PKGS"

missing=
for p in $want; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install)" >&2
	exit 1
fi

echo "install-deps: installing$missing"
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	made_policy=1
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0
