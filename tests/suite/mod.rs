mod alarm;
mod analyze;
mod cli;
mod cpe;
mod demo;
mod ovoc;
mod ovoc_shared;
mod session;
