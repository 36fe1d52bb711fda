"""What machines receive, rendered: iPXE scripts and the template variables
(:mod:`.templates`), the placing filters that keep values from changing a config's shape
(:mod:`.placing`), cloud-configs (:mod:`.cloudconfig`) and Ignition configs
(:mod:`.ignition`) with their validation, PXELINUX configs (:mod:`.pxelinux`)."""
