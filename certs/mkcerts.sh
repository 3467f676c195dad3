#!/bin/sh
# mkcerts.sh - development and test certificates for tlsrelay.  NOT for production.
#
#   certs/mkcerts.sh [--force] DIR
#       DIR/ca.crt, ca.key        development CA (EC P-256, 10 years, CA:TRUE, keyCertSign)
#       DIR/relay.crt, relay.key  relay certificate signed by it; SAN DNS:localhost,
#                                 DNS:relay.test, IP:127.0.0.1, IP:::1; EKU serverAuth+clientAuth
#       Idempotent: does nothing when DIR/relay.crt exists and is valid for more than a
#       day (and the CA is there); --force makes everything again.
#
#   certs/mkcerts.sh --leaf DIR NAME CN SAN-LIST [--expired] [--ca PREFIX]
#                    [--untrusted-ca] [--self-signed]
#       DIR/NAME.crt, DIR/NAME.key: a leaf for tests.  SAN-LIST is openssl syntax,
#       e.g. "DNS:mx.test,IP:127.0.0.1" (empty string: no SAN).
#       --ca PREFIX      sign with DIR/PREFIX.crt + DIR/PREFIX.key instead of DIR/ca.*
#                        (created as a CA named PREFIX when missing)
#       --untrusted-ca   sign with DIR/ca2.* - a second CA that is not the dev CA
#       --self-signed    no CA at all
#       --expired        validity 2020-01-01 .. 2020-01-31 (made under faketime)
#       The dev CA in DIR is created first when it does not exist.
#
# Keys are written with mode 600.  Needs only POSIX sh, openssl (and faketime for
# --expired).
set -eu

usage() {
	echo "usage: $0 [--force] DIR" >&2
	echo "       $0 --leaf DIR NAME CN SAN-LIST [--expired] [--ca PREFIX] [--untrusted-ca] [--self-signed]" >&2
	exit 2
}

die() { echo "mkcerts.sh: $*" >&2; exit 1; }

# newkey FILE: an EC P-256 private key, mode 600 from the start.
newkey() {
	(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
		-out "$1" 2>/dev/null) || die "cannot create key $1"
	chmod 600 "$1"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# mkca DIR PREFIX CN: self-signed CA certificate DIR/PREFIX.crt + key.
mkca() {
	newkey "$1/$2.key"
	openssl req -x509 -new -key "$1/$2.key" -out "$1/$2.crt" -days 3650 \
		-set_serial "$(serial)" -subj "/O=tlsrelay development/CN=$3" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" 2>/dev/null \
		|| die "cannot create CA $1/$2.crt"
}

# ensure_ca DIR PREFIX CN: create the CA unless both of its files exist.
ensure_ca() {
	if [ ! -s "$1/$2.crt" ] || [ ! -s "$1/$2.key" ]; then
		mkca "$1" "$2" "$3"
	fi
}

# sign DIR NAME CN SAN CAPREFIX SELF EXPIRED
sign() {
	d=$1 name=$2 cn=$3 san=$4 ca=$5 self=$6 expired=$7
	ext="$d/.$name.ext.$$"
	csr="$d/.$name.csr.$$"
	{
		echo "[v3]"
		echo "basicConstraints = critical, CA:FALSE"
		echo "keyUsage = critical, digitalSignature, keyEncipherment, keyAgreement"
		echo "extendedKeyUsage = serverAuth, clientAuth"
		echo "subjectKeyIdentifier = hash"
		[ "$self" = yes ] || echo "authorityKeyIdentifier = keyid"
		[ -z "$san" ] || echo "subjectAltName = $san"
	} >"$ext"
	newkey "$d/$name.key"
	if [ "$expired" = yes ]; then
		command -v faketime >/dev/null 2>&1 || die "--expired needs faketime"
		days=30
		ft="faketime 2020-01-01"
	else
		days=825
		ft=""
	fi
	openssl req -new -key "$d/$name.key" -subj "/CN=$cn" -out "$csr" 2>/dev/null \
		|| die "cannot create CSR for $name"
	if [ "$self" = yes ]; then
		$ft openssl x509 -req -in "$csr" -signkey "$d/$name.key" -days "$days" \
			-set_serial "$(serial)" -extfile "$ext" -extensions v3 \
			-out "$d/$name.crt" 2>/dev/null || die "cannot self-sign $name"
	else
		$ft openssl x509 -req -in "$csr" -CA "$d/$ca.crt" -CAkey "$d/$ca.key" \
			-days "$days" -set_serial "$(serial)" -extfile "$ext" -extensions v3 \
			-out "$d/$name.crt" 2>/dev/null || die "cannot sign $name with $ca"
	fi
	rm -f "$ext" "$csr"
}

[ $# -ge 1 ] || usage
command -v openssl >/dev/null 2>&1 || die "openssl not found"

if [ "$1" = "--leaf" ]; then
	shift
	[ $# -ge 4 ] || usage
	dir=$1 name=$2 cn=$3 san=$4
	shift 4
	ca=ca expired=no self=no
	while [ $# -gt 0 ]; do
		case $1 in
		--expired) expired=yes ;;
		--self-signed) self=yes ;;
		--untrusted-ca) ca=ca2 ;;
		--ca) [ $# -ge 2 ] || usage; ca=$2; shift ;;
		*) usage ;;
		esac
		shift
	done
	case $name in */*|"") die "bad NAME '$name'" ;; esac
	mkdir -p "$dir"
	ensure_ca "$dir" ca "tlsrelay development CA"
	if [ "$self" = no ]; then
		ensure_ca "$dir" "$ca" "tlsrelay test CA $ca"
	fi
	sign "$dir" "$name" "$cn" "$san" "$ca" "$self" "$expired"
	exit 0
fi

force=no
if [ "$1" = "--force" ]; then force=yes; shift; fi
[ $# -eq 1 ] || usage
dir=$1
case $dir in -*) usage ;; esac
mkdir -p "$dir"

if [ "$force" = no ] && [ -s "$dir/ca.crt" ] && [ -s "$dir/ca.key" ] &&
   [ -s "$dir/relay.key" ] && [ -s "$dir/relay.crt" ] &&
   openssl x509 -in "$dir/relay.crt" -noout -checkend 86400 >/dev/null 2>&1; then
	exit 0
fi

mkca "$dir" ca "tlsrelay development CA"
sign "$dir" relay relay.test "DNS:localhost,DNS:relay.test,IP:127.0.0.1,IP:::1" ca no no
echo "mkcerts.sh: development CA and relay certificate in $dir"
