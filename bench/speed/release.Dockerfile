# The baseline of bench/asan_speed_bench.py: a release PHP (Debian's php8.2, -O2) with Swoole
# built -O2 from the same source tarball as the ASan images, with OpenSSL, sockets, brotli and zlib as a
# production build has them. Built with a plain `docker build`; the init tests read it as a production image.
FROM debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends php8.2-cli php8.2-dev make gcc g++ libc6-dev pkg-config \
      libssl-dev libbrotli-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
COPY swoole.tar.gz /usr/src/
RUN mkdir -p /usr/src/swoole && tar -xf /usr/src/swoole.tar.gz -C /usr/src/swoole --strip-components=1 \
 && cd /usr/src/swoole && phpize && ./configure --enable-sockets --enable-openssl && make -j"$(nproc)" && make install \
 && echo "extension=swoole.so" > /etc/php/8.2/cli/conf.d/20-swoole.ini
WORKDIR /app
