"""What machines receive, rendered: iPXE scripts and the template variables
(:mod:`.templates`), cloud-configs (:mod:`.cloudconfig`) and Ignition configs
(:mod:`.ignition`) with their validation, PXELINUX configs (:mod:`.pxelinux`)."""
