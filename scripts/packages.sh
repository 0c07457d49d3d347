# Installs the Debian packages the lab needs, if missing (sourced by scripts/demo and
# scripts/test): iproute2, nftables, iputils-ping, conntrack, dnsmasq-base (the external
# host's resolver), dnsutils (dig, for tests), curl (HTTPS through the Ingress controller, for
# tests) and python3 (tests fetch metrics with it).
need=()
for pair in ip:iproute2 nft:nftables ping:iputils-ping conntrack:conntrack dnsmasq:dnsmasq-base dig:dnsutils curl:curl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
