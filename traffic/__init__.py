"""The traffic engine: build packets with scapy, send prebuilt bytes fast, capture, analyse.

Modules (each documents its public signatures):

- ``flows``    -- flows with distinct 5-tuples (plain data)
- ``stream``   -- the sequenced-stream header: format, pack, parse
- ``packets``  -- frame templates built once with scapy, stamped per packet
- ``roce``     -- RoCEv2 frames (scapy's BTH) and their templates
- ``icrc``     -- the RoCEv2 ICRC over raw bytes
- ``parse``    -- fast dissection of a received frame into a stream record
- ``records``  -- ``RxRecord``, one captured stream packet
- ``netns``    -- run a function (e.g. open a socket) inside a named network namespace
- ``sender``   -- ``RawSender``: AF_PACKET socket in a namespace, paced or unpaced
- ``receiver`` -- ``Receiver``: background capture with kernel timestamps, optional pcap
- ``pcap``     -- classic pcap writer (Ethernet or Linux SLL2 link type)
- ``run``      -- ``run_stream``: capture + send (+ timed events) + analysis in one call
- ``analysis`` -- loss/duplication/reordering/gaps, per-wire timelines, distributions
- ``stats``    -- chi-squared survival function (regularized upper incomplete gamma)
- ``bondhash`` -- the Linux 6.1 bonding driver's transmit hash, to predict a frame's port

Only ``sender``, ``receiver``, ``netns`` (and ``run``, through them) touch the
kernel; the rest is pure.
Only ``packets`` and ``roce`` import scapy (0.7 s here, ~10 s in the TCG
guest): sending prebuilt bytes, capturing and analysing never load it.
"""
