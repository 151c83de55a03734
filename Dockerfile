# warnshare: one image for the relay, the national nodes and the alert logger.
#
#   docker build -t warnshare .                       # from python:3.12-slim
#   docker build --build-arg PYTHON_IMAGE=... .       # any Debian-like image with python3 + venv
#
# Two stages: the build stage resolves the dependencies into a virtualenv (a layer that is
# rebuilt only when pyproject.toml changes), then installs warnshare itself on top; the
# runtime stage copies just that virtualenv, so pip caches and build tools stay behind.
# No key material is ever copied in: signing keys are mounted at run time (see
# docker-compose.yml), and .dockerignore keeps stray key files out of the build context.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
# Proxy settings (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ...) are predefined build args: pass
# them with --build-arg when pip must go through a proxy; they never reach the final image.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/warnshare \
 && /opt/warnshare/bin/pip install "setuptools>=68" wheel
WORKDIR /src
COPY pyproject.toml ./
# The dependency list is read from pyproject.toml so that there is one list to maintain, less
# matplotlib: the services never plot (plots are `warnshare sim` / `bench` work, done on a
# workstation), and it would add a third to the image.
RUN python3 -c 'import re, tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(r for r in d["project"]["dependencies"] if re.split(r"[^A-Za-z0-9_.-]", r)[0].lower() != "matplotlib"))' > requirements.txt \
 && /opt/warnshare/bin/pip install -r requirements.txt
COPY README.md ./
COPY warnshare ./warnshare
COPY sims ./sims
RUN /opt/warnshare/bin/pip install --no-deps --no-build-isolation . \
 && /opt/warnshare/bin/pip uninstall -q -y setuptools wheel pip \
 && /opt/warnshare/bin/warnshare --version

FROM ${PYTHON_IMAGE}
# keys/ and journal/ are empty mount points, owned by the service user so that volumes mounted
# there start writable for it; the keys themselves only ever arrive at run time.
RUN groupadd --system --gid 10001 warnshare \
 && useradd --system --uid 10001 --gid warnshare --home-dir /var/lib/warnshare --create-home \
      --shell /usr/sbin/nologin warnshare \
 && install -d -o warnshare -g warnshare -m 0700 /var/lib/warnshare/keys /var/lib/warnshare/journal \
      /var/lib/warnshare/handout/relay /var/lib/warnshare/handout/usa /var/lib/warnshare/handout/jpn \
      /var/lib/warnshare/handout/kor /var/lib/warnshare/handout/alerts
COPY --from=build /opt/warnshare /opt/warnshare
# In a container the relay listens on all of the container's interfaces; where it is
# reachable from is decided by the port publishing (127.0.0.1 only in docker-compose.yml).
ENV PATH=/opt/warnshare/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    WARNSHARE_HOST=0.0.0.0 WARNSHARE_PORT=8000 \
    NUMBA_CACHE_DIR=/var/lib/warnshare/numba-cache
USER warnshare
WORKDIR /var/lib/warnshare
# The fusion engine's compiled kernel, built once here (in the service user's own cache, which
# numba needs writable) rather than for seconds at every relay start.
RUN python3 -c "from warnshare.fusion import kernel; kernel.warm()"
EXPOSE 8000
# The relay's readiness (the default command). Nodes and the alert logger run from the same
# image and serve nothing, so docker-compose.yml disables the check for them. Python rather
# than curl: python:3.12-slim has no curl.
HEALTHCHECK --interval=2s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WARNSHARE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["warnshare"]
CMD ["relay"]
