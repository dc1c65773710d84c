# The baseline of bench/asan_speed_bench.py: a release PHP (Debian's, -O2) with Swoole built -O2 from
# the same source tarball as the ASan images, with OpenSSL, sockets, brotli and zlib as a production
# build has them. Built with a plain `docker build`; the init tests read it as a production image.
# The defaults are PHP 8.2 on bookworm; the bench's PHP 8.4 line passes SUITE=trixie PHP=8.4 and
# Swoole 6.2's flags (its OpenSSL is always on: no --enable-openssl).
ARG SUITE=bookworm
FROM debian:${SUITE}
ARG PHP=8.2
ARG SWOOLE_CONFIGURE="--enable-sockets --enable-openssl"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends php${PHP}-cli php${PHP}-dev make gcc g++ libc6-dev pkg-config \
      libssl-dev libbrotli-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
COPY swoole.tar.gz /usr/src/
RUN mkdir -p /usr/src/swoole && tar -xf /usr/src/swoole.tar.gz -C /usr/src/swoole --strip-components=1 \
 && cd /usr/src/swoole && phpize && ./configure ${SWOOLE_CONFIGURE} && make -j"$(nproc)" && make install \
 && echo "extension=swoole.so" > /etc/php/${PHP}/cli/conf.d/20-swoole.ini
WORKDIR /app
