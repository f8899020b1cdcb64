# The LongCluster silo (src/Silo, longcluster-silo.dll) as a container image:
#   docker build -t REGISTRY/longcluster-silo:TAG . && docker push REGISTRY/longcluster-silo:TAG
# Configuration comes from the environment (LongCluster__Clustering, LongCluster__Redis, LongCluster__Tls__…,
# LongCluster__Service__ApiToken; README, "Running a silo"); the Helm chart in helm/longcluster sets all of it.
# tests/Deploy.Tests runs the publish step below (with its own output folder) and checks what it produces.

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY . .
RUN dotnet publish src/Silo -c Release -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app .
# The aspnet image's non-root user (APP_UID = 1654); the chart runs the pod as the same uid.
USER $APP_UID
# 11111: silo to silo (Orleans, mutual TLS); 8080: client API, /healthz, /readyz, /membership.
EXPOSE 8080 11111
# Liveness for plain `docker run`: GET /healthz over bash's /dev/tcp, because the aspnet image has no curl or wget and
# installing one only for this would grow the image. The silo listens on LongCluster__Host (default POD_IP, then
# 127.0.0.1), so the probe connects there. Kubernetes ignores HEALTHCHECK: the chart has its own probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/${LongCluster__Host:-${POD_IP:-127.0.0.1}}/${LongCluster__HttpPort:-8080} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["dotnet", "longcluster-silo.dll"]
