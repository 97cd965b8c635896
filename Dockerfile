# sharedllm-server image (Debian 12). Installs exactly what scripts/setup.sh installs, so the image
# and a developer machine stay in step, builds in Release, and runs the server on the bundled model.
#   docker build -t sharedllm .
#   docker run -p 50051:50051 -p 9090:9090 -v sharedllm-data:/var/lib/sharedllm sharedllm
FROM debian:bookworm

ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /opt/sharedllm
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh && rm -rf /var/lib/apt/lists/*

COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHAREDLLM_BUILD_TESTS=OFF \
      -DSHAREDLLM_BUILD_BENCH=OFF \
 && ninja -C build sharedllm sharedllm-server sharedllm-cli \
 && install -m 0755 build/bin/sharedllm build/bin/sharedllm-server build/bin/sharedllm-cli /usr/local/bin/ \
 && rm -rf build

RUN useradd --system --home /var/lib/sharedllm sharedllm \
 && mkdir -p /var/lib/sharedllm && chown sharedllm /var/lib/sharedllm
USER sharedllm
VOLUME /var/lib/sharedllm
EXPOSE 50051 9090
# OpenBLAS threads must not spin while gRPC threads wait (see docs/PERFORMANCE.md).
ENV OMP_WAIT_POLICY=PASSIVE
ENTRYPOINT ["sharedllm-server", "--model", "/opt/sharedllm/models/mini", \
            "--data-dir", "/var/lib/sharedllm", "--listen", "0.0.0.0:50051", \
            "--metrics-listen", "0.0.0.0:9090"]
