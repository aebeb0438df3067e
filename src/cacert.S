/* The CA bundle (Debian's ca-certificates, Mozilla's set), embedded at build time so that TLS
 * works from an empty root. CACERT_PEM is the path the Makefile passes. */
	.section .rodata
	.global sluice_cacert_pem
	.global sluice_cacert_pem_end
	.balign 16
sluice_cacert_pem:
	.incbin CACERT_PEM
sluice_cacert_pem_end:
	.byte 0
	.section .note.GNU-stack,"",%progbits
