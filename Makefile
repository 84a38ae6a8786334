# Top-level targets. The project itself needs no make: see README.md.
.PHONY: deb lintian clean-deb

# dist/portsentinel_<version>_all.deb (and the source package), built from this checkout.
deb:
	bash scripts/build-deb.sh

# lintian --pedantic on what `make deb` built (0 errors expected; see docs/packaging.md for the rest).
lintian: deb
	lintian --pedantic --info dist/portsentinel_*.dsc dist/portsentinel_*_all.deb

clean-deb:
	rm -rf dist
