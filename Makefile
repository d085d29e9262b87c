# Conveniences over scripts/; each target works on a fresh Debian/Ubuntu
# machine with a Rust toolchain (build tools are installed when run as root).
.PHONY: run test demo static
run:
	scripts/run-local.sh
test:
	scripts/test.sh
demo:
	scripts/demo.sh
static:
	scripts/build-static.sh
