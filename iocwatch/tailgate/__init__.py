"""TLS 1.3 certificate tailgating (``--tailgate``): :mod:`.options` declares the flags,
:mod:`.extension` is the pipeline extension that queues and hands back probes, :mod:`.probe`
connects to servers and :mod:`.cache` keeps results across restarts."""
