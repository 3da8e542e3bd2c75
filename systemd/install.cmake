# SgbdInstall.cmake - run by `cmake --install` (and by cpack): installs the
# files whose place depends on the installation prefix, which is only
# known at install time (cmake --install --prefix, cpack's /usr):
#
#   unit       sgbd.service, ExecStart and -c rewritten to this prefix
#   sysusers   sysusers.d/sgbd.conf (the system user sgbd)
#   tmpfiles   tmpfiles.d/sgbd.conf (the state directory /var/lib/sgbd)
#   config     sgbd/sgbd.conf under the configuration directory
#
# Prefix /usr (the Debian package) gives the distribution's places:
# systemd's own unit, sysusers and tmpfiles directories (pkg-config
# systemd, read at configure time) and /etc/sgbd. Any other prefix keeps
# everything under it: PREFIX/lib/systemd/system, PREFIX/etc/sgbd (systemd
# reads /usr/local/lib/systemd/system too). SGBD_INSTALL_UNITDIR and
# SGBD_INSTALL_CONFDIR, when set at configure time, win.
#
# Inputs, set by the install(CODE) line of CMakeLists.txt: SGBD_SRC,
# SGBD_BIN_DIR, SGBD_BINDIR (relative), SGBD_SD_UNITDIR, SGBD_SD_SYSUSERSDIR,
# SGBD_SD_TMPFILESDIR, SGBD_INSTALL_UNITDIR, SGBD_INSTALL_CONFDIR.

set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr" OR prefix STREQUAL "/usr/")
    set(unitdir "${SGBD_SD_UNITDIR}")
    set(sysusersdir "${SGBD_SD_SYSUSERSDIR}")
    set(tmpfilesdir "${SGBD_SD_TMPFILESDIR}")
    set(confdir "/etc/sgbd")
    set(prefix "/usr")
else()
    set(unitdir "${prefix}/lib/systemd/system")
    set(sysusersdir "${prefix}/lib/sysusers.d")
    set(tmpfilesdir "${prefix}/lib/tmpfiles.d")
    set(confdir "${prefix}/etc/sgbd")
endif()
if(SGBD_INSTALL_UNITDIR)
    set(unitdir "${SGBD_INSTALL_UNITDIR}")
endif()
if(SGBD_INSTALL_CONFDIR)
    set(confdir "${SGBD_INSTALL_CONFDIR}")
endif()

# The unit names the Debian paths; point them at this installation.
file(READ "${SGBD_SRC}/systemd/sgbd.service" unit)
string(REPLACE "ExecStart=/usr/bin/sgbd "
       "ExecStart=${prefix}/${SGBD_BINDIR}/sgbd " unit "${unit}")
string(REPLACE " -c /etc/sgbd/sgbd.conf" " -c ${confdir}/sgbd.conf" unit
       "${unit}")
string(REPLACE "Documentation=file:/usr/share/doc/sgbd/"
       "Documentation=file:${prefix}/share/doc/sgbd/" unit "${unit}")
string(FIND "${unit}" "ExecStart=${prefix}/${SGBD_BINDIR}/sgbd serve -c "
       at)
if(at LESS 0)
    message(FATAL_ERROR "systemd/sgbd.service: ExecStart is not "
            "'/usr/bin/sgbd serve -c /etc/sgbd/sgbd.conf ...'; "
            "systemd/install.cmake cannot rewrite it")
endif()
set(stage "${SGBD_BIN_DIR}/install-stage")
file(MAKE_DIRECTORY "${stage}/unit" "${stage}/sysusers" "${stage}/tmpfiles")
file(WRITE "${stage}/unit/sgbd.service" "${unit}")
configure_file("${SGBD_SRC}/systemd/sgbd.sysusers"
               "${stage}/sysusers/sgbd.conf" COPYONLY)
configure_file("${SGBD_SRC}/systemd/sgbd.tmpfiles"
               "${stage}/tmpfiles/sgbd.conf" COPYONLY)

# file(INSTALL) adds DESTDIR and records each file in install_manifest.txt.
file(INSTALL DESTINATION "${unitdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${stage}/unit/sgbd.service")
file(INSTALL DESTINATION "${sysusersdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${stage}/sysusers/sgbd.conf")
file(INSTALL DESTINATION "${tmpfilesdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${stage}/tmpfiles/sgbd.conf")

# An edited configuration is never overwritten: a second `cmake --install`
# keeps it (the reference stays in share/doc/sgbd/examples). Packages are
# staged into an empty DESTDIR, and dpkg handles the conffile itself.
set(conf "$ENV{DESTDIR}${confdir}/sgbd.conf")
if(EXISTS "${conf}")
    file(READ "${conf}" old)
    file(READ "${SGBD_SRC}/configs/sgbd.conf" new)
    if(NOT old STREQUAL new)
        message(STATUS "Keeping: ${conf} (edited; the reference is in "
                "share/doc/sgbd/examples/sgbd.conf)")
        return()
    endif()
endif()
file(INSTALL DESTINATION "${confdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${SGBD_SRC}/configs/sgbd.conf")
