#!/bin/bash
# Runs inside the image root after the packages are installed (kiwi's config.sh).
# scripts/build-image.sh replaces @SOURCE_DATE_EPOCH@ in its staged copy.
set -euxo pipefail
epoch=@SOURCE_DATE_EPOCH@

# Writable by any uid the container runs as: the box cache (a volume) and TMPDIR.
install -d -m 1777 /var/cache/boxbuild /tmp
# Catalogs an admin may bake into a derived image, or mount.
install -d -m 0755 /etc/boxbuild/catalog.d

# Smaller, and the same from one build to the next: no documentation beyond the
# licences, no package lists, logs or caches that record when the image was built.
find /usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/locale/*
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old \
  /var/lib/dpkg/*-old /var/cache/ldconfig/aux-cache /var/log/* /etc/machine-id \
  /var/lib/systemd/catalog/database
# Every time stamp at most SOURCE_DATE_EPOCH: files dpkg unpacked keep the package's.
find / -xdev -newermt "@$epoch" -print0 | xargs -0r touch -h -d "@$epoch"
