# Makefile fragment: install the Dovecot IMAP server that the test fixture
# (tests/dovecot.py) runs. Include it from the main Makefile, or run
#     make -f tests/make_dovecot.mk dovecot
#
# Acts only when the `dovecot` binary is missing AND we are root; otherwise it
# does nothing (the IMAP tests then skip, or fail under CI=true).
# apt-get update runs only when the package is unknown to apt or the install
# fails on stale lists. The package's own system service must not start (it
# would take ports 143/993): a temporary policy-rc.d ("exit 101" = action
# forbidden) blocks it, and it is stopped afterwards in case it ran anyway.
# The fixture's servers use their own config and free ports regardless.

DOVECOT_PKG ?= dovecot-imapd

.PHONY: dovecot
dovecot:
	@set -e; \
	if PATH="$$PATH:/usr/sbin:/sbin" command -v dovecot >/dev/null 2>&1; then \
		echo "dovecot: already installed"; exit 0; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "dovecot: missing; not root, so not installing (apt-get install $(DOVECOT_PKG))"; \
		exit 0; \
	fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	install_pkg() { apt-get install -y --no-install-recommends $(DOVECOT_PKG); }; \
	if ! apt-cache show $(DOVECOT_PKG) >/dev/null 2>&1; then apt-get update; fi; \
	made_policy=; \
	if [ ! -e /usr/sbin/policy-rc.d ]; then \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
		chmod 0755 /usr/sbin/policy-rc.d; made_policy=1; \
	fi; \
	rc=0; install_pkg || { apt-get update && install_pkg; } || rc=$$?; \
	if [ -n "$$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	service dovecot stop >/dev/null 2>&1 || true; \
	exit $$rc
