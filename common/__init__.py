"""What chansink, chanproxy and chanload share, imported by all three and importing none.

tcp (socket options, --congestion), memo (the read memo of a parser),
eventloop (uvloop), listening (binding a server), bodies (response heads and
filler bodies), lifecycle (signals, grace period, drain), children (child Python
processes, isolated from the working directory).
"""

__version__ = "0.1.0"
