# pxeserver in a container. Run it with docker compose (docker-compose.yml): host
# networking, because ProxyDHCP and TFTP must see the boot network's broadcasts.
FROM debian:12-slim

# gnupg: `pxeserver assets fetch flatcar` verifies signatures; ipxe: the boot loaders.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv gnupg ipxe ca-certificates \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/pxeserver/
COPY pxeserver /src/pxeserver/pxeserver
RUN python3 -m venv /opt/pxeserver \
 && /opt/pxeserver/bin/pip install --no-cache-dir /src/pxeserver \
 && rm -rf /src/pxeserver

COPY cloud-configs /etc/pxeserver/cloud-configs
COPY contrib/pxeserver.yaml /etc/pxeserver/pxeserver.yaml
# The iPXE loaders from Debian's package, where the TFTP root volume starts out.
RUN mkdir -p /var/lib/pxeserver /srv/pxeserver/assets /srv/pxeserver/tftproot \
 && cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi \
       /srv/pxeserver/tftproot/

ENV PATH=/opt/pxeserver/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /var/lib/pxeserver
EXPOSE 67/udp 69/udp 4011/udp 8080/tcp
VOLUME ["/var/lib/pxeserver", "/srv/pxeserver/assets", "/srv/pxeserver/tftproot"]
ENTRYPOINT ["pxeserver"]
CMD ["serve", "--config", "/etc/pxeserver/pxeserver.yaml"]
