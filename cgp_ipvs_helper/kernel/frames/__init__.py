"""Link-layer frames: gratuitous ARP, unsolicited neighbour advertisements."""
