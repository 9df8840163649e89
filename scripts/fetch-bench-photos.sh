#!/usr/bin/env bash
# The benchmark photo set: every 8-20 MP JPEG of Debian's lomiri-wallpapers-16.04 and -20.04
# packages (10 photos, 2.6-16.8 MB, 7 of them progressive, licenses in the packages'
# debian/copyright), plus the iPhone 6 and Galaxy S7 photos of the shared developer set when
# GALLERY_TESTDATA points at it (12 photos in all):
#   scripts/fetch-bench-photos.sh DIR
# Then: gallery bench DIR, or scripts/bench-vs-others.sh DIR 5.
set -euo pipefail
DIR="${1:?usage: fetch-bench-photos.sh DIR}"
mkdir -p "$DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 >/dev/null
fi
for deb in ./*.deb; do dpkg -x "$deb" x; done
for name in Bridge_by_Sander_Klootwijk Dragonfly_by_Bolly Fossa_by_Jasper_Roks \
    Infinite-Sea_by_Aury88 Kleiber_by_Lukas_Baubkus Wine_by_Jakkub_Mede \
    picosdeeuropa_by_Aitzol_Berasategi seeding_by_Clements_Engelhardt \
    sunset_by_Aitzol_Berasategi umang_by_Abhishek_Mudgal; do
    cp "x/usr/share/backgrounds/$name.jpg" "$DIR/"
done
if [ -n "${GALLERY_TESTDATA:-}" ]; then
    cp "$GALLERY_TESTDATA/exif_gps/iphone6_gps.jpg" "$GALLERY_TESTDATA/exif_gps/samsung_sm-g930f_gps.jpg" "$DIR/"
fi
ls "$DIR"
