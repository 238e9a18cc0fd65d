# coapgate container image: the static release binary on a minimal base,
# running as an unprivileged user.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) -t coapgate .
#   docker run -p 5683:5683/udp -p 5682:5682/udp -p 5684:5684/udp -p 8080:8080 \
#     -v coapgate-data:/var/lib/coapgate coapgate
#
# The admin API key is printed once in the log of the first start
# (docker logs). Settings: COAPGATE_* environment variables or a file
# mounted at /etc/coapgate/coapgate.yaml with COAPGATE_CONFIG set to it.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG REVISION=
# The same script as the release archives, for this image's platform only.
RUN REVISION="$REVISION" NO_ARCHIVE=1 OUT=/out PLATFORMS="linux/$(go env GOARCH)" \
      bash scripts/release.sh "$VERSION" \
 && cp /out/coapgate_*/coapgate /out/coapgate_*/coapdev /out/ \
 && mkdir -p /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/coapgate /out/coapdev /usr/local/bin/
COPY --from=build --chown=65532:65532 /data /var/lib/coapgate
COPY deploy/coapgate.example.yaml /etc/coapgate/coapgate.example.yaml
USER 65532:65532
ENV COAPGATE_DATA_DIR=/var/lib/coapgate
VOLUME /var/lib/coapgate
EXPOSE 5683/udp 5682/udp 5684/udp 8080/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/coapgate", "health", "--api", "http://127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/coapgate"]
CMD ["serve"]
